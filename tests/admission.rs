//! /mutate, /validate and /convert over HTTPS with request bodies captured
//! from a real kube-apiserver v1.35.

mod common;

use agentic_webhook::testkit::client::Alpn;
use common::*;
use serde_json::{Value, json};

const CONTROLLER: &str = "system:serviceaccount:agentic-system:agentic-reconciler";

struct Env {
    _dir: tempfile::TempDir,
    server: Server,
    ca: Vec<u8>,
}

fn start() -> Env {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    make_certs(dir.path());
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
        "--controller-user",
        CONTROLLER,
    ]);
    let ca = read(&dir.path().join("ca.crt"));
    Env {
        _dir: dir,
        server,
        ca,
    }
}

fn endpoint(file: &str) -> &'static str {
    if file.contains(".mutate") {
        "/mutate"
    } else if file.contains(".validate") {
        "/validate"
    } else {
        "/convert"
    }
}

#[tokio::test]
async fn every_captured_request_is_decoded_and_answered() {
    let env = start();
    let mut conn = connect(env.server.https, &env.ca, Alpn::Both).await;
    let mut files: Vec<String> = std::fs::read_dir(fixture_path(""))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 57, "all 57 captures are in tests/fixtures");
    for file in files {
        let body = fixture(&file);
        let sent = json(&body);
        let resp = conn
            .post(&format!("{}?timeout=5s", endpoint(&file)), body)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            resp.status,
            200,
            "{file}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        let got = json(&resp.body);
        assert_eq!(got["response"]["uid"], sent["request"]["uid"], "{file}");
        if endpoint(&file) == "/convert" {
            assert_eq!(
                got["response"]["result"]["status"], "Success",
                "{file}: {got}"
            );
            let objects = got["response"]["convertedObjects"]
                .as_array()
                .cloned()
                .expect("convertedObjects is an array");
            assert_eq!(
                objects.len(),
                sent["request"]["objects"].as_array().map_or(0, Vec::len)
            );
            for o in objects {
                assert_eq!(
                    o["apiVersion"], sent["request"]["desiredAPIVersion"],
                    "{file}"
                );
            }
        }
    }
}

#[tokio::test]
async fn legacy_v1alpha1_create_is_normalized_then_allowed() {
    let env = start();
    let mut conn = connect(env.server.https, &env.ca, Alpn::Both).await;
    let resp = conn
        .post(
            "/mutate?timeout=5s",
            fixture("01-apply-v1alpha1-legacy.mutate.json"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&resp.body);
    assert_eq!(got["response"]["allowed"], true);
    assert_eq!(got["response"]["patchType"], "JSONPatch");
    assert_eq!(
        patch_of(&got),
        Some(json!([
            {"op": "add", "path": "/spec/initialPrompt", "value": "Refactor the auth module"},
            {"op": "remove", "path": "/spec/prompt"},
            {"op": "add", "path": "/spec/repos/0/url", "value": "https://github.com/acme/api.git"},
            {"op": "add", "path": "/spec/repos/0/branch", "value": "main"},
            {"op": "remove", "path": "/spec/repos/0/input"}
        ]))
    );
    assert_eq!(
        got["response"]["warnings"],
        json!([
            "spec.prompt is deprecated: moved to spec.initialPrompt",
            "spec.repos[0].input is deprecated: moved to spec.repos[0].url and .branch"
        ])
    );

    // Apply the patch as the apiserver would, then validate the result.
    let mut review = fixture_json("01-apply-v1alpha1-legacy.validate.json");
    let patch: json_patch::Patch =
        serde_json::from_value(patch_of(&got).expect("the legacy create is patched"))
            .unwrap_or_else(|e| panic!("{e}"));
    json_patch::patch(&mut review["request"]["object"], &patch).unwrap_or_else(|e| panic!("{e}"));
    let resp = conn
        .post("/validate", review.to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&resp.body);
    assert_eq!(got["response"]["allowed"], true, "{got}");

    // Mutating the mutated object yields no patch (reinvocation).
    let mut again = fixture_json("01-apply-v1alpha1-legacy.mutate.json");
    json_patch::patch(&mut again["request"]["object"], &patch).unwrap_or_else(|e| panic!("{e}"));
    let resp = conn
        .post("/mutate", again.to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&resp.body);
    assert!(
        got["response"].get("patch").is_none() && got["response"].get("patchType").is_none(),
        "{got}"
    );
}

#[tokio::test]
async fn update_while_running_is_denied_with_field_errors() {
    let env = start();
    let mut conn = connect(env.server.https, &env.ca, Alpn::Both).await;
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/update-running-denied.json"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let resp = conn
        .post("/validate?timeout=5s", body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&resp.body);
    let r = &got["response"];
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 422);
    assert_eq!(r["status"]["reason"], "Invalid");
    assert_eq!(
        r["status"]["message"],
        "[spec.initialPrompt: Forbidden: may not change while the session is active (phase: Running); \
spec.repos: Forbidden: may change only while an interactive session is Running (phase: Running)]"
    );
    assert_eq!(
        r["status"]["details"]["causes"],
        json!([
            {"reason": "FieldValueForbidden", "message": "Forbidden: may not change while the session is active (phase: Running)", "field": "spec.initialPrompt"},
            {"reason": "FieldValueForbidden", "message": "Forbidden: may change only while an interactive session is Running (phase: Running)", "field": "spec.repos"}
        ])
    );
}

#[tokio::test]
async fn status_updates_from_users_are_forbidden_and_from_the_controller_allowed() {
    let env = start();
    let mut conn = connect(env.server.https, &env.ca, Alpn::Both).await;
    for file in [
        "04-status-patch.validate.json",
        "05b-status-patch-via-v1alpha1-changed.validate.json",
    ] {
        let resp = conn
            .post("/validate", fixture(file))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let got = json(&resp.body);
        assert_eq!(got["response"]["allowed"], false, "{file}");
        assert_eq!(got["response"]["status"]["code"], 403, "{file}");
        assert_eq!(got["response"]["status"]["reason"], "Forbidden");
        assert_eq!(
            got["response"]["status"]["details"]["causes"][0]["field"],
            "status"
        );
    }
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/status-update-by-controller.json"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let resp = conn
        .post("/validate", body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json(&resp.body)["response"]["allowed"], true);

    // The controller still cannot make an illegal transition: ∅ -> Running.
    let mut review = fixture_json("04-status-patch.validate.json");
    review["request"]["userInfo"] =
        json!({"username": CONTROLLER, "groups": ["system:serviceaccounts"]});
    let resp = conn
        .post("/validate", review.to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&resp.body);
    assert_eq!(got["response"]["status"]["code"], 422);
    assert_eq!(
        got["response"]["status"]["details"]["causes"][0]["field"],
        "status.phase"
    );
}

#[tokio::test]
async fn captured_writes_that_break_no_rule_are_allowed() {
    let env = start();
    let mut conn = connect(env.server.https, &env.ca, Alpn::Both).await;
    for file in [
        "02-apply-ssa-v1alpha2-modern.validate.json",
        "03-merge-patch-spec.validate.json",
        "06-create-dry-run.validate.json",
        "08-sa-annotate-impersonated.validate.json",
        "08b-sa-annotate-token.validate.json",
        "09-delete-legacy.validate.json",
        "10-create-mutated.validate.json",
    ] {
        let resp = conn
            .post("/validate", fixture(file))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let got = json(&resp.body);
        assert_eq!(got["response"]["allowed"], true, "{file}: {got}");
    }
    // The runner's service account writing another session is refused (V20).
    let mut review = fixture_json("08-sa-annotate-impersonated.validate.json");
    review["request"]["name"] = json!("other-session");
    let resp = conn
        .post("/validate", review.to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&resp.body);
    assert_eq!(got["response"]["status"]["code"], 403);
    assert_eq!(
        got["response"]["status"]["details"]["causes"][0]["field"],
        "metadata.name"
    );
}

#[tokio::test]
async fn modern_creates_get_only_the_defaults_they_lack() {
    let env = start();
    let mut conn = connect(env.server.https, &env.ca, Alpn::Both).await;
    // modern-1 is complete: no patch.
    let got = json(
        &conn
            .post(
                "/mutate",
                fixture("02-apply-ssa-v1alpha2-modern.mutate.json"),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .body,
    );
    assert_eq!(got["response"]["allowed"], true);
    // The second repo has a branch; the first repo's autoPush etc. untouched.
    assert!(got["response"].get("patch").is_none(), "{got}");
    // mutated-1 lacks mainRepo: M5 adds it.
    let got = json(
        &conn
            .post("/mutate", fixture("10-create-mutated.mutate.json"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .body,
    );
    assert_eq!(
        patch_of(&got),
        Some(json!([{"op": "add", "path": "/spec/mainRepo", "value": "api"}]))
    );
    let _: Value = got;
}
