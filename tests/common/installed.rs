//! The product installed into this binary's control plane: the real
//! `serve` binary on 127.0.0.1 and what `agentic-webhook manifests --url`
//! renders for it (CRD with the conversion webhook, both webhook
//! configurations, RBAC), applied with kubectl.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::envtest::{ControlPlane, Principal, Who, control_plane};
use super::{BIN, Proc, Server, http_get, make_certs, metric};

pub const CRD: &str = "agenticsessions.vteam.ambient-code";
pub const GROUP: &str = "vteam.ambient-code";

/// AgenticSessions in `ns`, served in `version`, as untyped objects (the
/// tests compare exact JSON).
pub fn sessions_in(
    client: &kube::Client,
    ns: &str,
    version: &str,
) -> kube::Api<kube::api::DynamicObject> {
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(GROUP, version, "AgenticSession"),
        "agenticsessions",
    );
    kube::Api::namespaced_with(client.clone(), ns, &ar)
}

/// Create a v1alpha2 session and return it as the apiserver answered.
pub async fn create_session(client: &kube::Client, ns: &str, name: &str, spec: Value) -> Value {
    let o: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1alpha2"), "kind": "AgenticSession",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let created = sessions_in(client, ns, "v1alpha2")
        .create(&kube::api::PostParams::default(), &o)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    serde_json::to_value(created).expect("serializes")
}

/// `agentic-webhook reconcile` as the reconciler's service account, its
/// probes (and /metrics) on `probes`.
pub fn reconciler_at(env: &Installed, probes: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "reconcile", "--probe-addr", probes])
        .args(args)
        .env(
            "KUBECONFIG",
            env.cp.kubeconfig(&Who::Token(Principal::Reconciler)),
        )
        .env(
            "RUST_LOG",
            std::env::var("AGENTIC_TEST_RECONCILER_LOG")
                .unwrap_or_else(|_| "info,kube=warn".into()),
        );
    Proc::spawn(cmd, false)
}

pub struct Installed {
    pub cp: &'static ControlPlane,
    pub server: Server,
    /// The CA that signed the webhook's serving certificate.
    pub ca_file: PathBuf,
    /// `https://127.0.0.1:PORT`, what the apiserver calls.
    pub url: String,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The control plane with the product installed (once per test binary);
/// `None` when the real-apiserver tests are skipped.
pub fn installed() -> Option<&'static Installed> {
    let cp = control_plane()?;
    Some(INSTALLED.get_or_init(|| install(cp)))
}

/// `agentic-webhook manifests` with these arguments, as YAML; the
/// reconciler cluster-wide (the tests use a namespace each) unless
/// `--watch-namespace` says otherwise.
pub fn render(args: &[&str]) -> Vec<u8> {
    let scope: &[&str] = if args.contains(&"--watch-namespace") {
        &[]
    } else {
        &["--cluster-wide"]
    };
    let out = Command::new(BIN)
        .arg("manifests")
        .args(args)
        .args(scope)
        .output()
        .unwrap_or_else(|e| panic!("manifests: {e}"));
    assert!(
        out.status.success(),
        "manifests {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Start a webhook server as the manifests configure it (controller
/// principal: the reconciler's service account).
pub fn start_server(cp: &ControlPlane, extra: &[&str]) -> (Server, PathBuf) {
    let dir = cp
        .dir()
        .join(format!("webhook-{}", super::envtest::free_port()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    make_certs(&dir);
    let server = serve_with(&dir, extra, true);
    (server, dir.join("ca.crt"))
}

/// `serve` with the pair in `certs` (tls.crt, tls.key) and the manifests'
/// controller principal; `kept` servers outlive the test thread.
pub fn serve_with(certs: &std::path::Path, extra: &[&str], kept: bool) -> Server {
    let cert = certs.join("tls.crt");
    let key = certs.join("tls.key");
    let controller = format!("--controller-user={}", Principal::Reconciler.username());
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
        controller.as_str(),
    ];
    args.extend_from_slice(extra);
    if kept {
        Server::start_kept(&args, &[])
    } else {
        Server::start(&args)
    }
}

fn install(cp: &'static ControlPlane) -> Installed {
    let started = Instant::now();
    let (server, ca_file) = start_server(cp, &[]);
    let url = format!("https://{}", server.https);
    let yaml = render(&[
        "--ca-file",
        ca_file.to_str().unwrap_or_default(),
        "--url",
        &url,
    ]);
    cp.kubectl_ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&yaml),
    );
    wait_until_serving(cp);
    super::envtest::say(&format!(
        "envtest: product installed (webhook {url}) in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Installed {
        cp,
        server,
        ca_file,
        url,
    }
}

/// The CRD is Established and the apiserver calls our webhooks: a
/// server-side dry-run create of a legacy object comes back normalized
/// (mutation) and a bad one is refused (validation).
pub fn wait_until_serving(cp: &ControlPlane) {
    cp.wait_established(CRD);
    let probe = |prompt: &str, url: &str| {
        json!({"apiVersion": "vteam.ambient-code/v1alpha1", "kind": "AgenticSession",
               "metadata": {"name": "install-probe", "namespace": "default"},
               "spec": {"prompt": prompt, "repos": [{"input": {"url": url}}]}})
        .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let good = cp.kubectl(
            &super::envtest::Who::admin(),
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(probe("hello", "https://github.com/o/r.git").as_bytes()),
        );
        let bad = cp.kubectl(
            &super::envtest::Who::admin(),
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(probe("hello", "file:///etc").as_bytes()),
        );
        let obj: Value = serde_json::from_slice(&good.stdout).unwrap_or(Value::Null);
        if obj["spec"]["initialPrompt"] == "hello"
            && !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("spec.repos[0]")
        {
            return;
        }
        last = format!(
            "good: {} {}; bad: {}",
            String::from_utf8_lossy(&good.stdout),
            String::from_utf8_lossy(&good.stderr),
            String::from_utf8_lossy(&bad.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the apiserver did not start calling the webhooks within 30s: {last}");
}

/// Requests the installed webhook answered with 200 on `path` (`/mutate`,
/// `/validate`), from its own /metrics.
pub fn calls(env: &Installed, path: &str) -> f64 {
    let (code, text) = http_get(env.server.probes, "/metrics");
    assert_eq!(code, 200, "{text}");
    metric(
        &text,
        &format!("controller_runtime_webhook_requests_total{{webhook=\"{path}\",code=\"200\"}}"),
    )
    .unwrap_or(0.0)
}

/// `obj` as the apiserver holds it once decoded in `version`: with the
/// structural defaults of `manifests/crd.yaml` applied to every absent
/// property of an object (a mistyped value gets none, as on the apiserver).
pub fn with_crd_defaults(version: &str, obj: &Value) -> Value {
    static CRD_SCHEMA: OnceLock<Value> = OnceLock::new();
    let crd = CRD_SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crd.yaml"),
        )
        .unwrap_or_else(|e| panic!("crd.yaml: {e}"));
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("crd.yaml: {e}"))
    });
    let schema = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .map(|v| &v["schema"]["openAPIV3Schema"])
        .unwrap_or_else(|| panic!("no version {version} in crd.yaml"));
    let mut out = obj.clone();
    default_into(schema, &mut out);
    out
}

fn default_into(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, s) in schema["properties"].as_object().into_iter().flatten() {
                if let (Some(d), None) = (s.get("default"), map.get(k)) {
                    map.insert(k.clone(), d.clone());
                }
                if let Some(v) = map.get_mut(k) {
                    default_into(s, v);
                }
            }
            if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for v in map.values_mut() {
                    default_into(s, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for v in items {
                    default_into(s, v);
                }
            }
        }
        _ => {}
    }
}
