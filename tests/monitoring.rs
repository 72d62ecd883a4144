//! The monitoring shipped in manifests/components/monitoring, held to the
//! real tools: the alert rules pass `promtool check rules` and the unit
//! tests in tests/data/monitoring (every alert fires when it should and
//! stays quiet when it should not); every alert has a severity, a summary
//! and a runbook that exists; and every query of the Grafana dashboard
//! returns data from a real Prometheus scraping the real webhook, the real
//! reconciler and the real kube-apiserver while sessions are written.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::envtest::{self, MISSING, Principal, Who, free_port, say};
use common::installed::{create_session, render, sessions_in, start_server, wait_until_serving};
use common::*;
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn component(file: &str) -> PathBuf {
    root().join("manifests/components/monitoring").join(file)
}

/// The PrometheusRule's `spec`: a Prometheus rule file.
fn rule_file() -> Value {
    let text =
        std::fs::read_to_string(component("prometheusrule.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let rule: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

fn alerts(spec: &Value) -> Vec<Value> {
    spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn dashboard() -> Value {
    let text =
        std::fs::read_to_string(component("dashboard.json")).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("dashboard.json: {e}"))
}

/// Every PromQL expression of the dashboard, with the panel it is in.
fn dashboard_queries() -> Vec<(String, String)> {
    dashboard()["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| {
                    (
                        title.clone(),
                        t["expr"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        })
        .collect()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A Prometheus tool from Debian's `prometheus` package, or `None` (said
/// once; a failure with CI=true).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!("{MISSING} {name} not installed (apt-get install prometheus)");
        assert!(!in_ci(), "CI=true: {why}");
        say(&format!("SKIPPED {why}"));
    }
    found
}

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_alert_rules_pass_promtool_and_each_alert_is_unit_tested_both_ways() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = scratch("alerts");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, rule_file().to_string()).unwrap_or_else(|e| panic!("{e}"));
    let tests = dir.path().join("alerts-test.yaml");
    std::fs::copy(
        root().join("tests/data/monitoring/alerts-test.yaml"),
        &tests,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let run = |args: &[&Path]| {
        let out = Command::new(&promtool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("promtool: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        text
    };
    let checked = run(&[Path::new("check"), Path::new("rules"), &rules]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(&[Path::new("test"), Path::new("rules"), &tests]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Each alert has a case where it fires and one where it stays quiet.
    let text = std::fs::read_to_string(&tests).unwrap_or_else(|e| panic!("{e}"));
    let suite: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in suite["tests"].as_array().into_iter().flatten() {
        for t in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = t["alertname"].as_str().unwrap_or_default().to_owned();
            match t["exp_alerts"].as_array() {
                Some(a) if !a.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for alert in alerts(&rule_file()) {
        let name = alert["alert"].as_str().unwrap_or_default();
        assert!(
            fires.contains(name),
            "{name}: no promtool case where it fires"
        );
        assert!(
            quiet.contains(name),
            "{name}: no promtool case where it stays quiet"
        );
    }
    say(&format!(
        "monitoring: {} alerts, each unit-tested firing and quiet",
        fires.len()
    ));
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_that_exists() {
    let ops = std::fs::read_to_string(root().join("docs/operations.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    // GitHub's anchors: lower case, spaces to dashes, punctuation dropped.
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| {
            l.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| l.starts_with('#'))
        })
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let alerts = alerts(&rule_file());
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in &alerts {
        let name = a["alert"].as_str().unwrap_or_default();
        assert!(
            matches!(
                a["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}: severity"
        );
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{name}: summary"
        );
        let runbook = a["annotations"]["runbook_url"].as_str().unwrap_or_default();
        let anchor = runbook
            .strip_prefix(
                "https://github.com/ambient-code/agentic-webhook/blob/main/docs/operations.md#",
            )
            .unwrap_or_else(|| {
                panic!("{name}: runbook_url {runbook:?} is not into docs/operations.md")
            });
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/operations.md has no heading for #{anchor}"
        );
    }
    // The apiserver's own view of the webhook is watched.
    let exprs: String = alerts.iter().map(|a| a["expr"].to_string()).collect();
    for series in [
        "apiserver_admission_webhook_rejection_count",
        "apiserver_admission_webhook_admission_duration_seconds",
        "apiserver_admission_webhook_fail_open_count",
        "absent(up{job=\\\"agentic-webhook\\\"}",
    ] {
        assert!(exprs.contains(series), "no alert on {series}");
    }
}

#[test]
fn the_dashboard_covers_what_an_operator_looks_at() {
    let queries = dashboard_queries();
    let all: String = queries.iter().map(|(_, q)| q.as_str()).collect();
    for (what, series) in [
        ("requests", "controller_runtime_webhook_requests_total"),
        (
            "latency",
            "controller_runtime_webhook_latency_seconds_bucket",
        ),
        ("denials by rule", "agentic_webhook_denials_total"),
        ("conversions", "agentic_webhook_conversions_total"),
        (
            "certificate expiry",
            "agentic_webhook_certificate_expiry_timestamp_seconds",
        ),
        ("phases", "agentic_webhook_sessions"),
        ("attempts", "resource=\"pods\""),
        (
            "reconciler errors",
            "agentic_webhook_reconcile_errors_total",
        ),
        ("memory", "process_resident_memory_bytes"),
    ] {
        assert!(
            all.contains(series),
            "the dashboard shows no {what} ({series})"
        );
    }
    for (panel, q) in &queries {
        assert!(!q.trim().is_empty(), "{panel}: empty query");
    }
    assert_eq!(dashboard()["uid"], "agentic-webhook");
}

// ---------------------------------------------------------------------------
// Against a real Prometheus.

struct Prometheus {
    _proc: Proc,
    url: SocketAddr,
    _dir: tempfile::TempDir,
}

use std::net::SocketAddr;

impl Prometheus {
    fn start(bin: &Path, config: &str, rules: &Value) -> Prometheus {
        let dir = scratch("prometheus");
        std::fs::write(dir.path().join("rules.yaml"), rules.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path());
        let proc = Proc::spawn(cmd, false);
        let url: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(url).is_err() || http_get(url, "/-/ready").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {:?}",
                proc.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Prometheus {
            _proc: proc,
            url,
            _dir: dir,
        }
    }

    /// An instant query; the `result` array.
    fn query(&self, promql: &str) -> Vec<Value> {
        let mut encoded = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        let (code, body) = http_get(self.url, &format!("/api/v1/query?query={encoded}"));
        let v = json_in(&body);
        assert_eq!(code, 200, "{promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// The JSON document in a body that may be sent chunked (http_get does
/// not undo the framing).
fn json_in(body: &str) -> Value {
    match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// A sample's value, if it is a number (not NaN).
fn has_number(result: &[Value]) -> bool {
    result.iter().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| !v.is_nan())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_the_product() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    // The product, with a memory limit (so the limit series is > 0) and a
    // short connection age (so retirements happen while we watch).
    let (server, ca) = start_server(
        cp,
        &["--memory-limit", "256Mi", "--max-connection-age", "3s"],
    );
    let yaml = render(&[
        "--ca-file",
        ca.to_str().unwrap_or_default(),
        "--url",
        &format!("https://{}", server.https),
    ]);
    cp.kubectl_ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&yaml),
    );
    wait_until_serving(cp);
    let client = cp.client().await;
    let ns = cp.namespace(&client, "monitoring").await;
    let rprobes = format!("127.0.0.1:{}", free_port());
    let mut reconciler = Command::new(BIN);
    reconciler
        .args([
            "--log-format",
            "json",
            "reconcile",
            "--probe-addr",
            &rprobes,
        ])
        .args(["--no-leader-election", "--namespace", &ns])
        .env(
            "KUBECONFIG",
            cp.kubeconfig(&Who::Token(Principal::Reconciler)),
        )
        .env("RUST_LOG", "info,kube=warn");
    let reconciler = Proc::spawn(reconciler, false);

    // Each process exports its own series, and the process collector's.
    let webhook_metrics = http_get(server.probes, "/metrics").1;
    let reconciler_addr: SocketAddr = rprobes.parse().unwrap_or_else(|e| panic!("{e}"));
    let reconciler_metrics =
        envtest::eventually("reconciler /metrics", Duration::from_secs(20), || {
            let addr = reconciler_addr;
            async move {
                if std::net::TcpStream::connect(addr).is_err() {
                    return Err("not listening".to_owned());
                }
                Ok(http_get(addr, "/metrics").1)
            }
        })
        .await;
    for (what, text, own, foreign) in [
        (
            "webhook",
            &webhook_metrics,
            "controller_runtime_webhook_requests",
            "agentic_webhook_reconciles",
        ),
        (
            "reconciler",
            &reconciler_metrics,
            "agentic_webhook_reconcile_errors_total",
            "controller_runtime_webhook",
        ),
    ] {
        assert!(text.contains(own), "{what} /metrics lacks {own}");
        assert!(!text.contains(foreign), "{what} /metrics carries {foreign}");
        for p in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "process_virtual_memory_bytes ",
        ] {
            assert!(text.contains(p), "{what} /metrics lacks {p}");
        }
    }

    let api_port = cp.url.rsplit(':').next().unwrap_or_default();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [rules.yaml]\n\
         scrape_configs:\n\
         - job_name: agentic-webhook\n  static_configs: [{{targets: ['{}']}}]\n\
         - job_name: agentic-reconciler\n  static_configs: [{{targets: ['{rprobes}']}}]\n\
         - job_name: apiserver\n  scheme: https\n  authorization: {{credentials: {}}}\n  tls_config: {{ca_file: '{}'}}\n  static_configs: [{{targets: ['127.0.0.1:{api_port}']}}]\n",
        server.probes,
        Principal::Admin.token(),
        cp.ca_file.display(),
    );
    let prom = Prometheus::start(&prometheus, &config, &rule_file());

    // Traffic while Prometheus watches: sessions created (both webhooks,
    // the reconciler starts a runner pod for each), a write refused (a
    // denial by rule), v1alpha1 reads (conversions).
    let v1 = sessions_in(&client, &ns, "v1alpha1");
    let started = Instant::now();
    let mut n = 0;
    let queries = dashboard_queries();
    let mut missing: Vec<(String, String)> = queries.clone();
    while !missing.is_empty() && started.elapsed() < Duration::from_secs(90) {
        n += 1;
        create_session(
            &client,
            &ns,
            &format!("s{n}"),
            json!({"initialPrompt": "watch me", "repos": [{"url": "https://github.com/acme/api.git"}]}),
        )
        .await;
        let bad = cp.kubectl(
            &Who::admin(),
            &["create", "-n", &ns, "-f", "-"],
            Some(
                json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
                       "metadata": {"name": format!("bad{n}")},
                       "spec": {"initialPrompt": "p", "repos": [{"url": "file:///etc/passwd"}]}})
                .to_string()
                .as_bytes(),
            ),
        );
        assert!(!bad.status.success(), "a file: URL was admitted");
        let _ = v1
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if n % 5 == 0 {
            missing.retain(|(_, q)| {
                let q = q.replace("$__rate_interval", "30s");
                !has_number(&prom.query(&q))
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        missing.is_empty(),
        "dashboard queries without data after {:?} ({n} sessions): {missing:#?}",
        started.elapsed()
    );
    // The alert rules load in a real server too.
    let (code, body) = http_get(prom.url, "/api/v1/rules");
    assert_eq!(code, 200);
    let loaded = json_in(&body);
    let count: usize = loaded["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(count, alerts(&rule_file()).len(), "{body}");
    say(&format!(
        "monitoring: {} dashboard queries returned data after {:.1}s ({n} sessions)",
        queries.len(),
        started.elapsed().as_secs_f64()
    ));
    drop(reconciler);
    drop(server);
}
