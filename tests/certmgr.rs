//! `serve --manage-certs` against a scripted API server and a fake clock:
//! lost create races, renewals, CA rotation and failed injections, which a
//! real apiserver cannot be made to show on demand. The whole flow against
//! a real kube-apiserver is tests/apiserver_certs.rs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use agentic_webhook::certs::manage::{CertManager, ManagerConfig};
use agentic_webhook::certs::{self, CaPem};
use agentic_webhook::server::Handles;
use agentic_webhook::telemetry::Registry;
use base64::Engine as _;
use common::mockapi::{self, Log, lines, ok, status};
use serde_json::{Value, json};
use time::OffsetDateTime;

const DAY: i64 = 86_400;
const T0: i64 = 1_795_000_000;

/// A test's own clock, in unix seconds.
#[derive(Clone)]
struct Now(Arc<AtomicI64>);

impl Now {
    fn new() -> Self {
        Now(Arc::new(AtomicI64::new(T0)))
    }
    fn store(&self, t: i64, _: Ordering) {
        self.0.store(t, Ordering::SeqCst);
    }
    fn clock(&self) -> agentic_webhook::certs::manage::Clock {
        let cell = self.0.clone();
        Arc::new(move || {
            OffsetDateTime::from_unix_timestamp(cell.load(Ordering::SeqCst))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        })
    }
}

const SECRET: &str = "/api/v1/namespaces/agentic-system/secrets/agentic-webhook-ca";
const MUTATING: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/agentic-webhook";
const VALIDATING: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/agentic-webhook";
const CRD: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/agenticsessions.vteam.ambient-code";

fn config() -> ManagerConfig {
    ManagerConfig {
        namespace: "agentic-system".into(),
        ca_secret: "agentic-webhook-ca".into(),
        mutating: "agentic-webhook".into(),
        validating: "agentic-webhook".into(),
        crd: "agenticsessions.vteam.ambient-code".into(),
        dns_names: vec!["agentic-webhook.agentic-system.svc".into()],
        ips: vec![],
        cert_lifetime: Duration::from_secs(30 * DAY as u64),
        ca_lifetime: Duration::from_secs(300 * DAY as u64),
        renew_fraction: 2.0 / 3.0,
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret(ca: &CaPem, previous: Option<&str>) -> Value {
    let mut data = json!({"ca.crt": b64(&ca.cert_pem), "ca.key": b64(&ca.key_pem)});
    if let Some(p) = previous {
        data["ca-previous.crt"] = json!(b64(p));
    }
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": "agentic-webhook-ca", "namespace": "agentic-system", "resourceVersion": "7"},
           "data": data})
}

fn webhook_config(kind: &str, name: &str, bundle: Option<&str>) -> Value {
    let mut cc = json!({"service": {"name": "agentic-webhook", "namespace": "agentic-system", "path": "/x", "port": 443}});
    if let Some(b) = bundle {
        cc["caBundle"] = json!(b64(b));
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": "agentic-webhook"},
           "webhooks": [{"name": name, "clientConfig": cc, "admissionReviewVersions": ["v1"], "sideEffects": "None"}]})
}

fn crd(bundle: Option<&str>) -> Value {
    let mut cc = json!({"service": {"name": "agentic-webhook", "namespace": "agentic-system", "path": "/convert", "port": 443}});
    if let Some(b) = bundle {
        cc["caBundle"] = json!(b64(b));
    }
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "agenticsessions.vteam.ambient-code"},
           "spec": {"group": "vteam.ambient-code", "scope": "Namespaced",
                    "names": {"kind": "AgenticSession", "plural": "agenticsessions"}, "versions": [],
                    "conversion": {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"], "clientConfig": cc}}}})
}

/// The three objects, already carrying `bundle` (or none).
fn targets(bundle: Option<&str>) -> Vec<Value> {
    vec![
        webhook_config(
            "MutatingWebhookConfiguration",
            "mutate.agenticsessions.vteam.ambient-code",
            bundle,
        ),
        webhook_config(
            "ValidatingWebhookConfiguration",
            "validate.agenticsessions.vteam.ambient-code",
            bundle,
        ),
        crd(bundle),
    ]
}

fn manager(client: kube::Client, now: &Now) -> (CertManager, Handles) {
    let handles = Handles::new(Registry::new());
    handles.health.set_bundles_ready(false);
    let m = CertManager::new(
        client,
        config(),
        handles.certs.clone(),
        handles.health.clone(),
        handles.cert_metrics.clone(),
    )
    .with_clock(now.clock());
    (m, handles)
}

fn ca_at(t: i64) -> CaPem {
    let when = OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    certs::generate_ca_at("test CA", when, Duration::from_secs(300 * DAY as u64))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn served_cert_is_signed_by(h: &Handles, ca_pem: &str) -> bool {
    let Some(cur) = h.certs.current() else {
        return false;
    };
    let Some(leaf) = cur.key.cert.first() else {
        return false;
    };
    let (_, ca_der) =
        x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let ca = ca_der.parse_x509().unwrap_or_else(|e| panic!("{e}"));
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf).unwrap_or_else(|e| panic!("{e}"));
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

fn bundle_patches(log: &Log) -> Vec<String> {
    mockapi::recorded(log)
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| match &r.body {
            Some(Value::Array(ops)) => ops
                .iter()
                .find(|o| o["op"] == "add")
                .map(|o| o["value"].clone())
                .unwrap_or_default(),
            Some(v) => v["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"].clone(),
            None => Value::Null,
        })
        .map(|v| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_replica_that_loses_the_create_race_uses_the_winners_ca() {
    let now = Now::new();
    let winner = ca_at(T0);
    let mut script = vec![
        status(404, "NotFound"),
        status(409, "AlreadyExists"),
        ok(secret(&winner, None)),
    ];
    script.extend(
        targets(Some(&format!("{}\n", winner.cert_pem.trim_end())))
            .into_iter()
            .map(ok),
    );
    let (client, log) = mockapi::client(script);
    let (mut m, h) = manager(client, &now);
    m.step().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            format!("GET {SECRET}"),
            "POST /api/v1/namespaces/agentic-system/secrets?".to_owned(),
            format!("GET {SECRET}"),
            format!("GET {MUTATING}"),
            format!("GET {VALIDATING}"),
            format!("GET {CRD}"),
        ],
        "bundles already right: nothing patched"
    );
    assert!(served_cert_is_signed_by(&h, &winner.cert_pem));
    assert_eq!(h.health.readiness(), Ok(()));
}

#[tokio::test]
async fn the_serving_certificate_is_renewed_in_memory_without_a_restart() {
    let now = Now::new();
    let ca = ca_at(T0);
    let bundle = format!("{}\n", ca.cert_pem.trim_end());
    let mut script = vec![ok(secret(&ca, None))];
    script.extend(targets(Some(&bundle)).into_iter().map(ok));
    script.push(ok(secret(&ca, None)));
    script.extend(targets(Some(&bundle)).into_iter().map(ok));
    script.push(ok(secret(&ca, None)));
    script.extend(targets(Some(&bundle)).into_iter().map(ok));
    let (client, _log) = mockapi::client(script);
    let (mut m, h) = manager(client, &now);
    m.step().await.unwrap_or_else(|e| panic!("{e}"));
    let first = h
        .certs
        .current()
        .map(|c| c.serial.clone())
        .unwrap_or_default();
    now.store(T0 + 19 * DAY, Ordering::SeqCst);
    m.step().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        h.certs
            .current()
            .map(|c| c.serial.clone())
            .unwrap_or_default(),
        first,
        "not due yet"
    );
    now.store(T0 + 21 * DAY, Ordering::SeqCst);
    m.step().await.unwrap_or_else(|e| panic!("{e}"));
    let renewed = h
        .certs
        .current()
        .map(|c| c.serial.clone())
        .unwrap_or_default();
    assert_ne!(renewed, first, "renewed at 2/3 of 30 days");
    assert!(served_cert_is_signed_by(&h, &ca.cert_pem));
}

#[tokio::test]
async fn a_rotated_ca_shares_every_bundle_with_the_old_one_until_it_expires() {
    let old = ca_at(T0);
    let now = Now::new();
    now.store(T0 + 201 * DAY, Ordering::SeqCst);
    let old_bundle = format!("{}\n", old.cert_pem.trim_end());
    // GET and PATCH each target in turn.
    let t = targets(Some(&old_bundle));
    let script = vec![
        ok(secret(&old, None)),
        ok(secret(&old, None)),
        ok(t[0].clone()),
        ok(t[0].clone()),
        ok(t[1].clone()),
        ok(t[1].clone()),
        ok(t[2].clone()),
        ok(t[2].clone()),
    ];
    let (client, log) = mockapi::client(script);
    let (mut m, h) = manager(client, &now);
    m.step().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log)[..2],
        [format!("GET {SECRET}"), format!("PUT {SECRET}?")],
        "the CA is rotated at 2/3 of its 300 days"
    );
    let rec = mockapi::recorded(&log);
    let put = rec[1].body.clone().unwrap_or_default();
    let decode = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(put["data"][k].as_str().unwrap_or(""))
                .unwrap_or_default(),
        )
        .expect("UTF-8")
    };
    assert_eq!(
        put["metadata"]["resourceVersion"], "7",
        "rotation is conditional on what we read"
    );
    assert_eq!(decode("ca-previous.crt"), old.cert_pem);
    let new_ca = decode("ca.crt");
    assert_ne!(new_ca, old.cert_pem);
    let patches = bundle_patches(&log);
    assert_eq!(patches.len(), 3);
    for b in &patches {
        assert!(
            b.contains(new_ca.trim_end()) && b.contains(old.cert_pem.trim_end()),
            "both CAs in every bundle"
        );
    }
    assert!(
        served_cert_is_signed_by(&h, &new_ca),
        "served from the new CA once it is trusted"
    );

    // After the old CA expires it leaves the bundles.
    now.store(T0 + 301 * DAY, Ordering::SeqCst);
    let rotated = CaPem {
        cert_pem: new_ca.clone(),
        key_pem: decode("ca.key"),
    };
    let both = format!("{}\n{}\n", new_ca.trim_end(), old.cert_pem.trim_end());
    let t = targets(Some(&both));
    let (client, log) = mockapi::client(vec![
        ok(secret(&rotated, Some(&old.cert_pem))),
        ok(t[0].clone()),
        ok(t[0].clone()),
        ok(t[1].clone()),
        ok(t[1].clone()),
        ok(t[2].clone()),
        ok(t[2].clone()),
    ]);
    let (mut m, _h) = manager(client, &now);
    m.step().await.unwrap_or_else(|e| panic!("{e}"));
    for b in bundle_patches(&log) {
        assert_eq!(b.trim(), new_ca.trim(), "expired CA dropped");
    }
}

#[tokio::test]
async fn readiness_stays_false_while_a_bundle_cannot_be_injected() {
    let now = Now::new();
    let ca = ca_at(T0);
    let bundle = format!("{}\n", ca.cert_pem.trim_end());
    let t = targets(Some(&bundle));
    let (client, _log) = mockapi::client(vec![
        ok(secret(&ca, None)),
        ok(t[0].clone()),
        ok(t[1].clone()),
        status(404, "NotFound"),
    ]);
    let (mut m, h) = manager(client, &now);
    let err = m
        .step()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("CustomResourceDefinition agenticsessions.vteam.ambient-code not found"),
        "{err}"
    );
    assert!(h.health.readiness().is_err());
    assert!(
        h.certs.current().is_none(),
        "no certificate is served before its CA is trusted"
    );
}
